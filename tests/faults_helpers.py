"""A fork server for the fault tests: one process imports torch, diffusers and the explorer once,
then forks a child per `explorer` run (`explorer.cli.main`, exactly what the command runs).

It never runs a torch op itself, so forking is safe. Each request line is JSON
`{"runs": [{"args": [...], "kill_after": seconds | null, "err": path | null}, ...]}`: the runs
start together (a race), each is SIGKILLed `kill_after` seconds after its start when given,
and its stderr goes to the file `err` (else /dev/null). Each answer line is JSON
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
    kids = []
    for run in req["runs"]:
        t0 = time.time()
        pid = os.fork()
        if pid == 0:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            err = run.get("err")
            if err:
                fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            sys.stderr = open(2, "w", closefd=False)
            os._exit(explorer.cli.main(run["args"]))
        kids.append((pid, t0, run.get("kill_after")))
    for pid, t0, after in sorted((k for k in kids if k[2] is not None), key=lambda k: k[2]):
        time.sleep(max(0.0, t0 + after - time.time()))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out = []
    for pid, t0, _ in kids:
        _, status = os.waitpid(pid, 0)
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

    def run(self, args: list[str], kill_after: float | None = None, err=None) -> dict:
        return self.race([{"args": args, "kill_after": kill_after, "err": err and str(err)}])[0]
