"""The catalog is validated once, at start: each problem names the file, the field's path as
written, and why. ``gatewright models`` lists entries and says which variable activates one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gatewright.backends.registry import REQUIRED_FIELDS
from gatewright.cli import app
from gatewright.core.catalog import CatalogError, load_catalog, parse_catalog
from gatewright.core.errors import ModelInactive, ModelNotFound
from gatewright.settings import DEFAULT_CATALOG
from tests.upstream.conftest import catalog_toml

GOOD = """
[[models]]
id = "local"
context_window = 4096
max_output = 512
backend = "fake"

[[models]]
id = "vendor/big"
aliases = ["big"]
context_window = 8192
max_output = 1024
backend = "openai"
base_url = "https://api.example.com/v1"
api_key_env = "GW_CATALOG_TEST_KEY"
fallbacks = ["local"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path, REQUIRED_FIELDS)
    first, *rest = str(caught.value).splitlines()
    assert first == f"{path}: invalid catalog"
    return [line.strip() for line in rest]


def entry(**fields: Any) -> dict[str, Any]:
    """A small valid model entry; a field given as None is left out."""
    full = {"id": "m", "context_window": 100, "max_output": 10, "backend": "fake", **fields}
    return {k: v for k, v in full.items() if v is not None}


def test_a_good_catalog_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GW_CATALOG_TEST_KEY", "sk-test")
    catalog = load_catalog(write(tmp_path, GOOD), REQUIRED_FIELDS)
    assert catalog.resolve("big").id == "vendor/big"
    assert [e.id for e in catalog] == ["local", "vendor/big"]
    assert catalog.default_model == "local"
    assert catalog.find("vendor/big").deployments[0].name == "vendor/big"  # type: ignore[union-attr]


def test_the_packaged_catalog_is_valid() -> None:
    catalog = load_catalog(DEFAULT_CATALOG, REQUIRED_FIELDS)
    glm = catalog.find("zai-glm-5-1")
    assert glm is not None and glm.id == "zhipu/glm-5-1"
    assert [d.api_key_env for d in glm.deployments] == ["ZAI_API_KEY"]


def test_backend_options_are_typed_and_a_typo_fails_loudly(tmp_path: Path) -> None:
    text = catalog_toml(
        [
            entry(id="a", backend="openai", base_url="http://h/v1", options={"reasoning_stlye": "thinking"}),
            entry(id="b", backend="openai", base_url="http://h/v1", options={"reasoning_style": "loud"}),
            entry(id="c", backend="anthropic", base_url="http://h/v1", options={"auth": "cookie"}),
            entry(id="d", options={"delay": -1}),
            entry(id="e", backend=None, deployments=[{"backend": "fake", "options": {"fail_afterr": 2}}]),
            entry(id="f", backend="llamacpp", path="/m.gguf", options={"n_ctxx": 4096}),
            entry(id="g", backend="llamacpp", path="/m.gguf", options={"parallel": 0}),
            entry(id="h", backend="embedder", path="/e.gguf", options={"batch_tokenz": 64}),
        ]
    )
    problems = problems_of(tmp_path, text)
    assert problems[0] == "models[0] (a).options.reasoning_stlye: unknown field (a typo?)"
    assert problems[1].startswith("models[1] (b).options.reasoning_style: Input should be 'reasoning_effort'")
    assert problems[2].startswith("models[2] (c).options.auth: Input should be 'x-api-key' or 'bearer'")
    assert problems[3].startswith("models[3] (d).options.delay: Input should be greater than or equal to 0")
    assert problems[4] == "models[4] (e).deployments[0].options.fail_afterr: unknown field (a typo?)"
    assert problems[5] == "models[5] (f).options.n_ctxx: unknown field (a typo?)"
    assert problems[6].startswith("models[6] (g).options.parallel: Input should be greater than or equal to 1")
    assert problems[7] == "models[7] (h).options.batch_tokenz: unknown field (a typo?)"
    assert len(problems) == 8


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[[models]]\nid = "x"\ncontext_window = = 3\n')
    with pytest.raises(CatalogError, match=rf"^{path}: not valid TOML: .*line 3"):
        load_catalog(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="catalog file not found"):
        load_catalog(tmp_path / "nope.toml")


def test_unknown_backend_and_missing_base_url(tmp_path: Path) -> None:
    text = catalog_toml(
        [
            entry(id="a", backend="openia"),
            entry(id="b", backend="openai"),
            entry(id="c", backend=None, deployments=[{"backend": "anthropic"}]),
        ]
    )
    assert problems_of(tmp_path, text) == [
        "models[0] (a).backend: unknown backend 'openia'; known: anthropic, embedder, fake, llamacpp, openai",
        "models[1] (b).base_url: missing: backend 'openai' needs it",
        "models[2] (c).deployments[0].base_url: missing: backend 'anthropic' needs it",
    ]


def test_bad_prices_and_numbers(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        catalog_toml([entry(prices={"input": -1.0, "output": "cheap"}, weight=0, max_retries=50, timeout=-2)]),
    )
    assert problems == [
        "models[0] (m).prices.input: Input should be greater than or equal to 0 (got -1.0)",
        "models[0] (m).prices.output: Input should be a valid number, unable to parse string as a number (got 'cheap')",
        "models[0] (m).weight: Input should be greater than 0 (got 0)",
        "models[0] (m).timeout: Input should be greater than 0 (got -2)",
        "models[0] (m).max_retries: Input should be less than or equal to 10 (got 50)",
    ]


def test_duplicate_names_unknown_fallback_and_default(tmp_path: Path) -> None:
    text = 'default_model = "ghost"\n' + catalog_toml(
        [
            entry(id="a", aliases=["shared"]),
            entry(id="b", aliases=["shared", "a"], fallbacks=["nowhere", "b"]),
        ]
    )
    assert problems_of(tmp_path, text) == [
        "models[1] (b).aliases[0]: 'shared' is already a name of models[0]",
        "models[1] (b).aliases[1]: 'a' is already a name of models[0]",
        "models[1] (b).fallbacks[0]: 'nowhere' is not a model id or alias here",
        "models[1] (b).fallbacks[1]: 'b' is this model itself",
        "default_model: 'ghost' is not a model id or alias here",
    ]


def test_entry_level_mistakes(tmp_path: Path) -> None:
    text = catalog_toml(
        [
            entry(id="a", max_output=500, context_window=100),
            entry(id="b", api_key_env="sk-live-123", base_url="api.example.com", backend="openai"),
            entry(id="c", contxt_window=5),
            {"id": "d", "context_window": 10, "max_output": 5},
            entry(id="e", routing="fastest"),
        ]
    )
    assert problems_of(tmp_path, text) == [
        "models[1] (b).base_url: must be an http:// or https:// URL, such as https://api.example.com/v1 "
        "(got 'api.example.com')",
        "models[1] (b).api_key_env: must be the name of an environment variable (letters, digits, _), "
        "not the key itself (got 'sk-live-123')",
        "models[2] (c).contxt_window: unknown field (a typo?)",
        "models[3] (d).deployments: missing: give 'backend' (one deployment) or a 'deployments' list",
        "models[4] (e).routing: Input should be 'weighted' or 'least-busy' (got 'fastest')",
    ]
    # Entry-level problems that need the others first: reported once pydantic is satisfied.
    assert problems_of(tmp_path, catalog_toml([entry(max_output=500)])) == [
        "models[0] (m).max_output: 500 is larger than context_window 100"
    ]


def test_duplicate_deployment_names(tmp_path: Path) -> None:
    twice = [{"name": "same", "backend": "fake"}, {"name": "same", "backend": "fake"}]
    text = catalog_toml([entry(backend=None, deployments=twice)])
    assert problems_of(tmp_path, text) == ["models[0] (m).deployments[1].name: 'same' names another deployment too"]


def test_empty_catalog(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "models = []\n")
    assert problems == ["models: Tuple should have at least 1 item after validation, not 0"]


def test_shorthand_and_deployments_together() -> None:
    with pytest.raises(CatalogError, match=r"models\[0\] \(m\): give either 'backend'"):
        parse_catalog({"models": [entry(deployments=[{"backend": "fake"}])]})


def test_inactive_model_names_its_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GW_CATALOG_TEST_KEY", raising=False)
    catalog = load_catalog(write(tmp_path, GOOD), REQUIRED_FIELDS)
    with pytest.raises(ModelInactive) as caught:
        catalog.resolve("big")
    assert "GW_CATALOG_TEST_KEY" in caught.value.message and caught.value.param == "model"
    with pytest.raises(ModelNotFound):
        catalog.resolve("small")
    monkeypatch.setenv("GW_CATALOG_TEST_KEY", "sk-test")
    reloaded = load_catalog(write(tmp_path, GOOD), REQUIRED_FIELDS)  # keys are read at load time
    assert reloaded.resolve("big").deployments[0].api_key == "sk-test"


def test_models_command_lists_and_says_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GW_CATALOG_TEST_KEY", raising=False)
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["models", "--catalog", str(path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert "inactive: set GW_CATALOG_TEST_KEY" in rows["vendor/big"]
    assert "active" in rows["local"] and "inactive" not in rows["local"]
    monkeypatch.setenv("GW_CATALOG_TEST_KEY", "sk-test")
    result = CliRunner().invoke(app, ["models", "--catalog", str(path)], env={"COLUMNS": "250"})
    assert "inactive" not in result.output


def test_models_command_reports_a_bad_catalog(tmp_path: Path) -> None:
    path = write(tmp_path, catalog_toml([entry(backend="nope")]))
    result = CliRunner().invoke(app, ["models", "--catalog", str(path)])
    assert result.exit_code == 2
    assert f"{path}: invalid catalog" in result.output and "unknown backend 'nope'" in result.output


def test_serve_refuses_a_bad_catalog_before_starting(tmp_path: Path) -> None:
    path = write(tmp_path, catalog_toml([entry(prices={"input": -3.0})]))
    env = {**os.environ, "GATEWRIGHT_CATALOG": str(path), "GATEWRIGHT_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "gatewright", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert f"{path}: invalid catalog" in done.stderr
    assert "models[0] (m).prices.input: Input should be greater than or equal to 0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # nothing was created
