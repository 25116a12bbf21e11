"""The docs stay in step with the code: every option in the README, every claim in docs/claims.md."""

from __future__ import annotations

import ast

import pytest

from pytest_qwen3vl.plugin.catalogue import CATALOGUE
from pytest_qwen3vl.plugin.settings import OPTIONS, flag
from tests.conftest import REPO


@pytest.mark.parametrize("name", list(OPTIONS))
def test_readme_documents_every_option(name: str) -> None:
    readme = (REPO / "README.md").read_text()
    assert f"`{flag(name)}" in readme, f"README.md does not document {flag(name)}"


@pytest.mark.parametrize("claim", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_claims_page_lists_every_claim(claim) -> None:
    page = (REPO / "docs" / "claims.md").read_text()
    assert f"| {claim.number} | `{claim.id}` |" in page, f"docs/claims.md lacks claim {claim.id}"
    assert claim.statement in page, f"docs/claims.md states {claim.id} differently from the catalogue"


def test_readme_starts_with_the_commands_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:5]]
    assert "pytest conformance" in blocks[0] and "--qwen3vl-grid=1,24,24" in blocks[0]
    assert blocks[1] in ci, ".ci/run must run the README's second command verbatim"
    assert "transformers==5.23.0" in blocks[2] and "-m qwen3vl_versions" in blocks[2]
    assert blocks[2] in ci, ".ci/run must run the README's third command (transformers 5.23.0) verbatim"
    assert '"transformers>=5,<6"' in blocks[3] and "-m qwen3vl_versions" in blocks[3]
    assert blocks[3] in ci, ".ci/run must run the README's fourth command (the newest 5.x) verbatim"


def fixture_names() -> list[str]:
    """Every fixture the plugin defines, read from its fixtures module."""
    tree = ast.parse((REPO / "pytest_qwen3vl" / "plugin" / "fixtures.py").read_text())
    return [
        node.name for node in tree.body
        if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    ]


@pytest.mark.parametrize("name", fixture_names())
def test_readme_fixture_table_lists_every_fixture(name: str) -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Fixtures", 1)[1].split("\n## ", 1)[0]
    assert f"`{name}`" in table, f"README.md's fixture table does not list {name}"
