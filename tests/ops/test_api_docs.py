"""The API reference's docstrings document what the code takes and raises.

Every object a docs/api page renders (`::: name`) is checked: each parameter of a function, a
method or a class constructor appears in its docstring's Args section, and a function whose own
body raises has a Raises section. A new argument or a new error without its documentation fails
here, before `mkdocs build` renders an incomplete page.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

API_PAGES = Path(__file__).resolve().parents[2] / "docs" / "api"


def rendered_names() -> list[tuple[str, list[str] | None]]:
    """(name, the members its `options: members: [...]` restricts it to, or None)."""
    entries = []
    for page in sorted(API_PAGES.glob("*.md")):
        for name, members in re.findall(r"^::: ([\w.]+)\n(?:\s+options:\n\s+members: \[(.*?)\])?",
                                        page.read_text(), flags=re.M):
            entries.append((name, [m.strip() for m in members.split(",")] if members else None))
    return entries


def resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def documented_callables(name: str, obj, members=None):
    """(qualified name, callable, docstring holding its Args) for obj and what it renders."""
    if inspect.ismodule(obj):
        for member_name, member in vars(obj).items():
            if member_name.startswith("_") or getattr(member, "__module__", None) != obj.__name__:
                continue
            if members is not None and member_name not in members:
                continue
            if inspect.isfunction(member) or inspect.isclass(member):
                yield from documented_callables(f"{name}.{member_name}", member)
        return
    if inspect.isclass(obj):
        # merge_init_into_class: the constructor's arguments are documented on the class
        if obj.__init__ is not object.__init__:
            yield name, obj.__init__, obj.__doc__
        for member_name, member in vars(obj).items():
            if member_name.startswith("_") or not inspect.isfunction(member):
                continue
            # an override without a docstring of its own (extra_repr) is torch's, not ours
            overrides = any(member_name in vars(base) for base in obj.__mro__[1:])
            if member.__doc__ or not overrides:
                yield f"{name}.{member_name}", member, member.__doc__
        return
    yield name, obj, obj.__doc__


def parameters(fn) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    out = []
    for p in sig.parameters.values():
        if p.name in ("self", "cls"):
            continue
        out.append({p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name)
    return out


def args_section(doc: str) -> str:
    match = re.search(r"^\s*Args:\n(.*?)(?=^\s*\w[\w ]*:\n|\Z)", doc, flags=re.M | re.S)
    return match.group(1) if match else ""


def own_body(name: str, fn) -> str:
    """The source after fn's docstring; for a dataclass, whose generated __init__ has no
    source, its __post_init__'s (where its checks are); "" when there is none."""
    if fn.__name__ == "__init__" and inspect.isclass(cls := resolve(name)):
        fn = vars(cls).get("__post_init__", fn)
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return ""
    return source.split(fn.__doc__, 1)[-1] if fn.__doc__ else source.split(":\n", 1)[-1]


CASES = [case for name, members in rendered_names()
         for case in documented_callables(name, resolve(name), members)]
WITH_PARAMETERS = [case for case in CASES if parameters(case[1])]
RAISING = [case for case in CASES if re.search(r"^\s*raise\b", own_body(case[0], case[1]),
                                               flags=re.M)]


def test_the_api_pages_render_what_they_should():
    assert len(rendered_names()) >= 15
    assert len(WITH_PARAMETERS) >= 40 and len(RAISING) >= 15
    assert "snnkernels.surrogate.Surrogate" in [c[0] for c in RAISING]  # via __post_init__


@pytest.mark.parametrize("name, fn, doc", CASES, ids=[c[0] for c in CASES])
def test_has_a_docstring(name, fn, doc):
    assert doc and doc.strip(), f"{name} has no docstring (mkdocstrings leaves it out)"


@pytest.mark.parametrize("name, fn, doc", WITH_PARAMETERS, ids=[c[0] for c in WITH_PARAMETERS])
def test_every_parameter_is_in_args(name, fn, doc):
    section = args_section(inspect.cleandoc(doc))
    missing = [p for p in parameters(fn)
               if not re.search(rf"^\s*{re.escape(p)}\s*(\(.*?\))?:", section, flags=re.M)]
    assert not missing, f"{name}: Args does not document {missing}"


@pytest.mark.parametrize("name, fn, doc", RAISING, ids=[c[0] for c in RAISING])
def test_a_body_that_raises_has_raises(name, fn, doc):
    assert re.search(r"^\s*Raises:", doc, flags=re.M), f"{name} raises but has no Raises"
