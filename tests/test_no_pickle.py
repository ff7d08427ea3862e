"""The library never unpickles: no module under bayes_crl/ may use pickle or a pickling loader."""
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bayes_crl"

FORBIDDEN = [
    (re.compile(r"^\s*(import\s+[\w.,\s]*\b(c?pickle|cloudpickle|dill|joblib)\b|from\s+(c?pickle|cloudpickle|dill)\b)"),
     "imports a pickling module"),
    (re.compile(r"\bpickle\.loads?\s*\("), "pickle.load"),
    (re.compile(r"\btorch\.load\s*\("), "torch.load("),
    (re.compile(r"allow_pickle\s*=\s*True"), "allow_pickle=True"),
    (re.compile(r"weights_only\s*=\s*False"), "weights_only=False"),
    (re.compile(r"\bcloudpickle\b"), "cloudpickle"),
    (re.compile(r"\bdill\b"), "dill"),
    (re.compile(r"\bget_param_store\(\)\s*\.\s*load\s*\("), "pyro param store load (unpickles)"),
]


def _code_lines(path: Path):
    """Lines with comments stripped (a '#' outside quotes starts a comment; good enough for this scan)."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        code = re.sub(r"#.*$", "", line) if "#" in line and not re.search(r"[\"'].*#.*[\"']", line) else line
        yield number, code


def scan(package: Path = PACKAGE) -> list[str]:
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for number, code in _code_lines(path):
            for pattern, what in FORBIDDEN:
                if pattern.search(code):
                    offenders.append(f"{path.relative_to(package.parent)}:{number}: {what}: {code.strip()}")
    return offenders


def test_no_pickle_in_library():
    offenders = scan()
    assert not offenders, "Pickle-based loading is not allowed in bayes_crl (use bayes_crl.persistence):\n" + \
        "\n".join(offenders)


def test_scanner_catches_offenders(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "bad.py").write_text("import pickle\nx = torch.load(f)\n# torch.load( in a comment is fine\n"
                                "np.load(f, allow_pickle=True)\n")
    found = scan(pkg)
    assert len(found) == 3 and any("bad.py:1" in f for f in found) and any("bad.py:4" in f for f in found)
