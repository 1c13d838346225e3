"""Compare's parts beyond its layout: model B of "Two models" (linked to A by depth and log SNR)
and the per-class paired intervals of B − A."""

from __future__ import annotations

import numpy as np
import streamlit as st

from explorer import exposure
from explorer.probes.metrics import SideBySide, paired_bootstrap_diff
from explorer.settings import Setting
from explorer.ui import common, services, state
from explorer.ui.link_models import depth_text, linked_block, linked_t

OTHER_MODEL = "other: folder or hub id…"


def per_class_paired(cmp: SideBySide, y) -> np.ndarray:
    """`(C, 3)`: per class, B − A recall `(diff, low, high)` with a paired bootstrap over that
    class's test images (each image keeps its pair of predictions)."""
    y = np.asarray(y)
    right_a, right_b = cmp.a.predictions == y, cmp.b.predictions == y
    return np.array(
        [paired_bootstrap_diff(right_b[y == c], right_a[y == c]) for c in range(len(cmp.classes))]
    )


def other_model(ctx, ws, sa: Setting):
    """Model B of "Two models" (another built-in, a random-weights twin or a typed folder or
    hub id) on the same test images, and its setting: linked to A by default (the block at
    A's depth, the level with A's log SNR), or picked from B's own blocks and levels.
    Returns (B's workspace, B's setting), or None until a model is named."""
    opts = [n for n in services.builtin_models() if n != ctx.model]
    opts += [m for m in (ctx.random_model, ctx.base_model) if m != ctx.model] + [OTHER_MODEL]
    opts = list(dict.fromkeys(opts))
    row = common.grid(common.CONTROL_MIN, 3, vertical_alignment="bottom")
    spec = state.choice("compare_model2", "model2", opts, opts[0])(
        row.selectbox, "Model B", options=opts, help="Compared on the same test images as A."
    )
    if spec == OTHER_MODEL:
        spec = row.text_input("Model B folder or hub id", key="compare_model2_path").strip()
    linked = state.flag("compare_linked", "linked", True)(
        row.toggle, "Link B to A", help="B's block at A's depth, B's t at A's log SNR."
    )
    if not spec:
        st.info("Name model B (a folder or hub id) to compare it with A.")
        return None
    exposure.check_model(spec, common.policy())
    ws_b = services.workspace(ctx, spec)
    cat_a, cat_b = ws.catalogue, ws_b.catalogue
    i_a = [lay.name for lay in cat_a].index(sa.layer)
    i_b = linked_block(i_a, len(cat_a), len(cat_b))
    t_b = linked_t(sa.t, ws.model.log_snr, services.log_snr_levels(ws_b))
    if linked:
        st.caption(
            f"B is linked to A: {depth_text(i_b, len(cat_b))} of {ws_b.model_name} sits at the "
            f"depth of A's {depth_text(i_a, len(cat_a))}; its t={t_b} has the log SNR of A's "
            f"t={sa.t} ({ws.model.log_snr(sa.t):.2f})."
        )
        return ws_b, Setting(t_b, cat_b[i_b].name, sa.pool)
    c = common.grid(common.CONTROL_MIN, 2)
    with c.cell():
        t_b = common.timestep_control(
            "compare_tb", "tb", ws_b.num_timesteps, "Timestep B", default=t_b
        )
    block_b = common.layer_choice(cat_b, "compare_block_b", "blockb", default_index=i_b)(
        c.selectbox,
        "Block B",
        options=[lay.name for lay in cat_b],
        format_func=common.label_of(cat_b).get,
    )
    return ws_b, Setting(int(t_b), block_b, sa.pool)
