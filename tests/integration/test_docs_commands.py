"""The docs' commands cannot drift from the code: every `clusterset …` a user is told to type
(the shell code blocks of the README and docs/; inline mentions are prose) parses with today's
CLI, and every `helm install|upgrade` of the chart renders with its `--set` values against the
schema."""

from __future__ import annotations

import re
import shlex

import pytest
import typer
from typer._click import exceptions as click

from clusterset.cli.main import app
from tests.integration.servers import ROOT
from tests.integration.test_deploy import helm

pytestmark = pytest.mark.integration

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_lines(text: str) -> list[str]:
    """Lines of the shell code blocks (`$ ` prompts dropped, continuations joined), comment
    lines left out."""
    out = []
    for lang, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang not in ("", "sh", "bash", "console"):
            continue  # mermaid, yaml: not commands
        lines = block.replace("\\\n", " ").splitlines()
        lines = [line.strip().removeprefix("$ ") for line in lines]  # a prompt, in examples
        out += [line for line in lines if line and not line.startswith("#")]
    return out


def invocations(line: str, program: str) -> list[list[str]]:
    """The argument lists of `program` in a shell line (pipes, `;`, `&&`, `$(...)` split)."""
    found = []
    for part in re.split(r"\|\||&&|[|;<>]|\$\(|\)", line):
        try:
            words = shlex.split(part.split(" #", 1)[0])
        except ValueError:
            continue
        words = [w for w in words if not re.fullmatch(r"\w+=\S*", w)] or words  # VAR=… prefix
        if len(words) > 1 and words[0] in (program, f"kubectl-{program}"):
            found.append(words[1:])
        elif len(words) > 2 and words[:2] == ["kubectl", program]:  # the kubectl plugin
            found.append(words[2:])
    return found


def documented(program: str) -> list[tuple[str, list[str]]]:
    return [
        (f"{doc.relative_to(ROOT)}: {line.strip()[:120]}", args)
        for doc in DOCS
        for line in shell_lines(doc.read_text())
        for args in invocations(line, program)
    ]


def test_every_documented_clusterset_command_parses() -> None:
    root = typer.main.get_group(app)
    seen, bad = 0, []
    for where, args in documented("clusterset"):
        if any(a in ("…", "...") or "…" in a for a in args) or args[0].startswith("<"):
            continue  # a synopsis with placeholders, not a command to type
        seen += 1
        name = next((a for a in args if a in root.commands), None)
        try:
            if name is None:
                raise click.UsageError(f"no command in {args}")
            at = args.index(name)
            ctx = root.make_context("clusterset", [*args[:at], name])  # the global flags
            root.commands[name].make_context(name, list(args[at + 1 :]), parent=ctx)
        except typer.Exit:
            continue  # --help, --version
        except click.ClickException as exc:
            bad.append(f"{where}\n    {exc.format_message()}")
    assert not bad, "\n".join(bad)
    assert seen >= 7, f"only {seen} documented clusterset commands found: the parser broke?"


def test_every_documented_helm_install_renders() -> None:
    seen, bad = 0, []
    for where, args in documented("helm"):
        if not ({"install", "upgrade"} & set(args)) or "deploy/chart/clusterset" not in args:
            continue
        seen += 1
        flags = []
        for i, a in enumerate(args):  # shell variables become a member's name
            if a in ("--set", "--set-string") and i + 1 < len(args):
                flags += [a, re.sub(r"\$\{?\w+\}?", "member2", args[i + 1])]
            elif a.startswith(("--set=", "--set-string=")):
                flag, value = a.split("=", 1)
                flags += [flag, re.sub(r"\$\{?\w+\}?", "member2", value)]
        out = helm("template", "docs", str(ROOT / "deploy" / "chart" / "clusterset"), *flags,
                   ok=False)  # fmt: skip
        if out.returncode != 0:
            bad.append(f"{where}\n    {out.stderr.strip()[-400:]}")
    assert not bad, "\n".join(bad)
    assert seen >= 4, f"only {seen} documented helm installs found"


def test_the_extractor_sees_what_it_should() -> None:
    text = (
        '```sh\nclusterset wire-dns --kubeconfig K \\\n  --context member2 --server "$IP"\n'
        "# clusterset in a comment\nkubectl clusterset status -o wide | grep web\n"
        "$ clusterset status -o html > fleet.html\n```\nProse: `clusterset --nope`.\n"
        "```yaml\nclusterset: not a command\n```\n"
    )
    lines = shell_lines(text)
    assert len(lines) == 3, lines
    assert invocations(lines[0], "clusterset") == [
        ["wire-dns", "--kubeconfig", "K", "--context", "member2", "--server", "$IP"]
    ]
    assert invocations(lines[1], "clusterset") == [["status", "-o", "wide"]]  # the plugin
    assert invocations(lines[2], "clusterset") == [["status", "-o", "html"]]
