"""Your export: each ``--qwen3vl-onnx`` file judged against golden PyTorch with the same weights.

The golden model gets the weights the file was exported from (``--qwen3vl-config=FOLDER`` or a
preset with ``--qwen3vl-seed``); every grid of ``--qwen3vl-grid`` (``sweep`` for the named set) is
run on each ``--qwen3vl-runtime`` (default ONNX Runtime) and compared value by value, at the tolerance
of the file's weight type or of the precision that ran, whichever is looser: a grid that runs proves
nothing by itself (a file traced at 1x24x24 runs 2x24x12 and returns other numbers). The interface,
DeepStack and locating rows are decided on ONNX Runtime, the reference runtime. Deselected when no
file is given.
"""

from __future__ import annotations

import pytest

from pytest_qwen3vl.errors import ProbeFailed
from pytest_qwen3vl.judge.finding import WRONG, served_line
from pytest_qwen3vl.judge.pipeline_cost import cost_grid
from pytest_qwen3vl.model.inputs import patch_dim
from pytest_qwen3vl.onnxfile.weights import misfits
from pytest_qwen3vl.plugin.settings import ONNX_OUTPUTS, flag, ini_key

pytestmark = pytest.mark.qwen3vl_artefact


def _recognised(check) -> None:
    """Tests other than the interface's are not run on a file whose outputs are not recognised."""
    if not check.interface.recognised:
        pytest.skip("outputs not recognised (see artefact-interface for how to map them)")


def _weight_report(check):
    """The file's weights against the checkpoint's; the test is not run when reading them failed
    (ours: nothing is said of the file)."""
    try:
        return check.weight_report
    except ProbeFailed as exc:
        pytest.skip(f"not run: {exc}")


@pytest.mark.qwen3vl_claim("artefact-interface")
def test_interface(qwen3vl_artefact, qwen3vl_config, qwen3vl_artefact_golden, qwen3vl_record):
    check = qwen3vl_artefact
    iface = check.interface
    if not iface.recognised:
        pytest.fail(f"{iface.unrecognised_text()}; map them with {flag(ONNX_OUTPUTS)}={iface.mapping_example()} "
                    f"(ini key {ini_key(ONNX_OUTPUTS)})", pytrace=False)
    problems = []
    width = patch_dim(qwen3vl_config)
    if iface.pixels.dims and isinstance(iface.pixels.dims[-1], int) and iface.pixels.dims[-1] != width:
        problems.append(f"{iface.pixels.name} rows are {iface.pixels.dims[-1]} wide, the config's patches {width}")
    out = int(qwen3vl_config.vision["out_hidden_size"])
    for port in (iface.pooled, *iface.deepstack, iface.stacked):
        if port is not None and port.dims and isinstance(port.dims[-1], int) and port.dims[-1] != out:
            problems.append(f"{port.name} is {port.dims[-1]} wide, the config's out_hidden_size {out}")
    shapes = {k: tuple(v.shape) for k, v in qwen3vl_artefact_golden.model.state_dict().items()}
    problems += misfits(check.facts.initializers, shapes)
    layers = qwen3vl_artefact_golden.deepstack_layers
    if len(iface.deepstack) > len(layers):
        problems.append(f"{len(iface.deepstack)} DeepStack outputs, the config has {len(layers)}")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; {len(problems) - 3} more" if len(problems) > 3 else "")
        pytest.fail(f"weights or outputs do not fit the config {qwen3vl_config.name}: {shown}", pytrace=False)
    grid = f"grid {iface.grid.name}" if iface.grid else "no grid input (one fixed grid)"
    deepstack = (f"DeepStack {', '.join(p.name for p in iface.deepstack)}" if iface.deepstack
                 else f"DeepStack stacked in {iface.stacked.name}" if iface.stacked else "no DeepStack outputs")
    qwen3vl_record.holds(
        f"pixels {iface.pixels.name}, {grid}, pooled {iface.pooled.name}, {deepstack}; {iface.describe()}; "
        f"weights {check.weights.name} ({check.weights.evidence})"
    )


@pytest.mark.qwen3vl_claim("artefact-parity")
def test_parity(qwen3vl_artefact_on_runtime, qwen3vl_grid, qwen3vl_settings, qwen3vl_whole_model, qwen3vl_record):
    """The verdict is the format's tolerance; on one grid the row also says what the file's outputs cost
    the whole model's next token (shown, never deciding)."""
    check = qwen3vl_artefact_on_runtime
    _recognised(check)
    run = check.run(qwen3vl_grid)
    cost = ("; " + check.pipeline_cost(qwen3vl_grid, qwen3vl_whole_model).text()
            if qwen3vl_grid == cost_grid(qwen3vl_settings.grids) else "")
    if run.error is not None:
        pytest.fail(run.error + cost, pytrace=False)
    measured = "; ".join([*run.problems, *(o.text() for o in run.outputs)])
    if not run.served:
        if any(output.nonfinite for output in run.outputs):  # located on the runtime where it happens
            measured += f"; {check.first_nonfinite(qwen3vl_grid)}"
        pytest.fail(f"{check.runtime_text}: outside the {check.tolerance_text}: {measured}{cost}", pytrace=False)
    qwen3vl_record.holds(f"{check.runtime_text}: {measured} ({check.tolerance_text}){cost}")


@pytest.mark.qwen3vl_claim("artefact-weights")
def test_weights(qwen3vl_artefact, qwen3vl_settings, qwen3vl_record):
    """Fails only for weights no rounding or quantization of the checkpoint explains."""
    check = qwen3vl_artefact
    report = _weight_report(check)
    if not report.explained:
        pytest.fail(report.text(), pytrace=False)
    line = report.text()
    if not report.all_equal and check.interface.recognised:
        ran = [check.run(g) for g in qwen3vl_settings.grids if check.run(g).error is None]
        if ran:
            line += f"; costs relative L2 {ran[0].worst_rel_l2():.2g} at the output on {ran[0].grid.id}"
    qwen3vl_record.holds(line)


@pytest.mark.qwen3vl_claim("artefact-graph")
def test_graph(qwen3vl_artefact, qwen3vl_settings, qwen3vl_record):
    """The file against golden holding the file's own weights: a graph bug fails here, other or
    rounded weights do not."""
    check = qwen3vl_artefact
    _recognised(check)
    _weight_report(check)
    grids = qwen3vl_settings.grids
    findings = check.graphs(grids)
    ran = [f for f in findings if f.error is None]
    if not ran:
        pytest.fail(f"no grid runs, so the graph cannot be judged: {findings[0].error}", pytrace=False)
    how = ("every weight is the checkpoint's: the parity runs decide" if check.weight_report.all_equal
           else f"golden with the file's own weights, {check.arithmetic.text}")
    wrong = [f for f in ran if f.status == WRONG]
    if wrong:
        pytest.fail(f"{how}: wrong on " + ", ".join(f"{f.grid.id} ({f.reason()})" for f in wrong), pytrace=False)
    cost = check.activation_cost(ran[0].grid)
    note = (f"; accuracy level 4 (int8 activations) costs relative L2 {cost:.2g} on {ran[0].grid.id}"
            if cost is not None else "")
    refused = len(findings) - len(ran)
    qwen3vl_record.holds(f"{how}: right on {len(ran)} grid{'s' if len(ran) != 1 else ''} it runs (worst relative L2 "
                         f"{max(f.worst_rel_l2() for f in ran):.2g})"
                         + (f", refuses {refused} (see artefact-grids)" if refused else "") + note)


@pytest.mark.qwen3vl_claim("artefact-grids")
def test_grids_served(qwen3vl_artefact_on_runtime, qwen3vl_settings, qwen3vl_record):
    """A grid is served when the file runs it and is right there: against golden holding the file's own
    weights, so the weights' cost is artefact-weights' and artefact-parity's, never a grid's. On ONNX
    Runtime, the reference runtime, at the arithmetic the file declares; on another runtime, at the
    precision that ran there."""
    check = qwen3vl_artefact_on_runtime
    _recognised(check)
    if check.runs.session() is None:  # one line for the file, not the same refusal once per grid
        pytest.fail(str(check.runs.load_error), pytrace=False)
    _weight_report(check)
    findings = check.graphs(qwen3vl_settings.grids)
    served, line = served_line(findings, graph=True)
    if not served:
        pytest.fail(f"{check.runtime_text} {line}", pytrace=False)
    qwen3vl_record.holds(f"{check.runtime_text} {line}: {', '.join(g.id for g in qwen3vl_settings.grids)}")


@pytest.mark.qwen3vl_claim("artefact-deepstack")
def test_deepstack_outputs(qwen3vl_artefact, qwen3vl_settings, qwen3vl_record):
    check = qwen3vl_artefact
    _recognised(check)
    if not check.interface.has_deepstack:  # nothing to match: a row that could not fail says nothing
        pytest.skip("not run: the file has no DeepStack outputs (the report's recipe drops them on purpose; "
                    "a language model fed by this file gets no DeepStack features)")
    running = [g for g in qwen3vl_settings.grids if check.run(g).error is None]
    if not running:
        error = check.run(qwen3vl_settings.grids[0]).error
        pytest.fail(f"no grid runs, so DeepStack outputs cannot be matched: {error}", pytrace=False)
    grid = next((g for g in running if check.run(g).served), running[0])
    layers = check.golden.deepstack_layers
    found, wrong = [], []
    for match in check.deepstack_matches(grid):
        if match.matched is None:
            wrong.append(f"{match.output} matches no golden feature (best cosine {match.cosine:.3f})")
        elif match.matched == -1:
            wrong.append(f"{match.output} carries the pooled output (cosine {match.cosine:.6f})")
        elif match.matched != match.position:
            wrong.append(f"{match.output} carries golden DeepStack {match.matched} (layer {layers[match.matched]}), "
                         f"not {match.position}")
        else:
            found.append(f"{match.output} = DeepStack {match.matched} (layer {layers[match.matched]}, "
                         f"cosine {match.cosine:.6f})")
    swapped = sum("carries golden DeepStack" in w for w in wrong)
    if wrong:
        pytest.fail(f"{grid.id}: {'swapped: ' if swapped >= 2 else ''}{'; '.join(wrong)}", pytrace=False)
    missing = len(layers) - len(found)
    note = f"; {missing} of golden's {len(layers)} not exported" if missing else ""
    qwen3vl_record.holds(f"{grid.id}: {', '.join(found)}{note}")


# Each location is one more run of the probed graph: enough to show a pattern, not every grid again.
MAX_LOCATED = 3


@pytest.mark.qwen3vl_claim("artefact-where")
def test_where_it_goes_wrong(qwen3vl_artefact, qwen3vl_settings, qwen3vl_record):
    check = qwen3vl_artefact
    _recognised(check)
    _weight_report(check)
    grids = qwen3vl_settings.grids
    # silently wrong grids first: the worse finding, and the one a user cannot see
    bad = sorted((g for g in grids if not check.run(g).served), key=lambda g: check.run(g).status != WRONG)
    if not bad:
        others = [r.text for r in qwen3vl_settings.runtimes if r.name != check.runtime.name]
        unlocated = (f"; drift on {', '.join(others)} is not located here (module outputs are compared with "
                     "golden on ONNX Runtime only; a NaN/Inf is located in artefact-parity's row)" if others else "")
        qwen3vl_record.holds(f"nothing goes wrong on {len(grids)} grid{'s' if len(grids) != 1 else ''} on "
                             f"{check.runtime.label}{unlocated}")
        return
    if all(check.run(g).error is not None and "node" not in check.run(g).error for g in bad):
        pytest.fail(f"not located: the file does not run ({check.run(bad[0]).error})", pytrace=False)
    report = check.weight_report
    if qwen3vl_settings.report is not None:  # the Markdown report draws the first failing grid's drift
        qwen3vl_record.profile(check.path.name, check.profile(bad[0], checkpoint=True).to_dict())
    # grids whose drift the file's own weights explain: its graph is right there with them, said once
    weighed = [] if report.all_equal else [g for g, f in zip(bad, check.graphs(bad), strict=True) if f.served]
    rest = [g for g in bad if g not in weighed]
    tried = rest[:MAX_LOCATED]
    located = check.locate_all(tried)
    if located and all(loc.problem is not None for loc in located) and not weighed:
        pytest.skip(f"not run: {located[0].problem}")  # our probe failed: nothing said of the file here
    wrong = [loc.text() for grid, loc in zip(tried, located, strict=True) if check.run(grid).status == WRONG]
    refused = [loc.text() for grid, loc in zip(tried, located, strict=True) if check.run(grid).status != WRONG]
    findings = wrong
    if weighed:
        why = ("the weights explain the drift" if report.explained
               else "the weights are not the checkpoint's (see artefact-weights)")
        worst = max(check.graph(g).worst_rel_l2() for g in weighed)
        where = weighed[0].id if len(weighed) == 1 else f"{', '.join(g.id for g in weighed)} ({len(weighed)} grids)"
        findings.append(f"{where}: {why}; the graph is right with them "
                        f"({'' if len(weighed) == 1 else 'worst '}relative L2 {worst:.2g})")
    findings += refused
    if len(rest) > MAX_LOCATED:
        findings.append(f"{len(rest) - MAX_LOCATED} more failing grids not located")
    if any(loc.first_bad == "patch_embed" for loc in located) and not report.explained:
        findings.insert(0, f"weights differ from the checkpoint: {report.text()}")
    pytest.fail("; ".join(findings), pytrace=False)
