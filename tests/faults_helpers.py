"""A fork server for the fault tests: one process imports torch, diffusers and the explorer once,
then forks a child per `explorer` run (`explorer.cli.main`, exactly what the command runs).

It never runs a torch op itself, so forking is safe. Each request line is JSON
`{"runs": [{"args": [...], "kill_after": seconds | null, "kill_on": text | null, "err": path |
null}, ...]}`: the runs start together (a race), each is SIGKILLed `kill_after` seconds after
its start (or after `kill_on` first shows on its stderr) when given, and its stderr goes to the
file `err` (else /dev/null). Each answer line is JSON
`{"results": [{"status": exit status or "killed", "seconds": wall time}, ...]}`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SERVER = r"""
import json, os, signal, sys, time
import torch
torch.set_num_threads(1)
import diffusers  # noqa: F401
import sklearn.linear_model  # noqa: F401
import explorer.cli, explorer.features.extract, explorer.models.loader, explorer.workspace  # noqa

for line in sys.stdin:
    req = json.loads(line)
    kids, reaped = [], {}
    for run in req["runs"]:
        if run.get("err"):
            open(run["err"], "w").close()  # there before the child starts: the parent reads it
        t0 = time.time()
        pid = os.fork()
        if pid == 0:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            if run.get("err"):
                fd = os.open(run["err"], os.O_WRONLY)
            os.dup2(fd, 2)
            os._exit(explorer.cli.main(run["args"]))
        kids.append((pid, t0, run))
    for pid, t0, run in kids:
        if run.get("kill_after") is None:
            continue
        if run.get("kill_on"):  # count kill_after from the child's first `kill_on` on stderr
            while pid not in reaped:
                with open(run["err"], errors="replace") as f:
                    if run["kill_on"] in f.read():
                        t0 = time.time()
                        break
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    reaped[pid] = status
                time.sleep(0.01)
        time.sleep(max(0.0, t0 + run["kill_after"] - time.time()))
        if pid not in reaped:
            os.kill(pid, signal.SIGKILL)
    out = []
    for pid, t0, _ in kids:
        status = reaped[pid] if pid in reaped else os.waitpid(pid, 0)[1]
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        code = "killed" if killed else os.waitstatus_to_exitcode(status)
        out.append({"status": code, "seconds": time.time() - t0})
    print(json.dumps({"results": out}), flush=True)
"""


class ForkServer:
    """`with ForkServer() as fs: fs.run([args], kill_after=...)` (see the module docstring)."""

    def __enter__(self) -> ForkServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def race(self, runs: list[dict]) -> list[dict]:
        """Start every run of `runs` at once; their answers, in order."""
        self.proc.stdin.write(json.dumps({"runs": runs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        return json.loads(line)["results"]

    def run(
        self, args: list[str], kill_after: float | None = None, err=None, kill_on: str | None = None
    ) -> dict:
        """One run; `kill_on`: count `kill_after` from when this text first shows on its stderr
        (`err` must be given)."""
        run = {"args": args, "kill_after": kill_after, "err": err and str(err), "kill_on": kill_on}
        return self.race([run])[0]
