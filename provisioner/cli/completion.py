"""Shell completion for bash: `provisioner completion bash` prints a completion function
made from the parser itself (commands, their actions and options), which asks the daemon
for names as you type (`provisioner complete KIND PREFIX`: nodes, racks, tags, images,
guests, hosts, roles, jobs). No daemon, no names: completion never prints an error."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..client import Client
from ..errors import ProvisionerError
from .commands import all_nodes

# What a command's first free word names (the lab's and the daemon's own commands need none).
ARGUMENTS = {
    "show": "node", "events": "node", "delete": "node", "console": "node-or-guest", "inspect": "node",
    "label": "node", "power": "target", "reimage": "target", "rollback": "target", "nightly": "target",
    "job": "job", "swap": "role",
}
ACTION_ARGUMENTS = {("image", "show"): "image", ("image", "remove"): "image", ("guest", "show"): "guest",
                    ("guest", "delete"): "guest", ("guest", "reset"): "guest", ("guest", "console"): "guest",
                    ("host", "remove"): "host", ("host", "gc"): "host"}
OPTION_ARGUMENTS = {"--rack": "rack", "--tag": "tag", "--untag": "tag", "--image": "image", "--host": "host",
                    "--role": "role", "--state": "state"}
KINDS = ("node", "rack", "tag", "target", "image", "guest", "node-or-guest", "host", "role", "job", "state")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def script(parser: argparse.ArgumentParser) -> str:
    """The bash completion function for this parser."""
    commands = _subcommands(parser)
    cases, action_cases = [], []
    for name, sub in sorted(commands.items()):
        actions = _subcommands(sub)
        cases.append(f"        {shlex.quote(name)}) words={shlex.quote(' '.join(sorted(actions)))}; "
                     f"opts={shlex.quote(' '.join(_options(sub)))}; kind={ARGUMENTS.get(name, '')} ;;")
        for action, one in sorted(actions.items()):
            kind = ACTION_ARGUMENTS.get((name, action), "")
            action_cases.append(f"        {shlex.quote(name + ' ' + action)}) "
                                f"opts={shlex.quote(' '.join(_options(one)))}; kind={kind} ;;")
    option_cases = "\n".join(f"        {o}) kind={k} ;;" for o, k in OPTION_ARGUMENTS.items())
    top, top_opts = " ".join(sorted(commands)), " ".join(_options(parser))
    return f"""# bash completion for provisioner: eval "$(provisioner completion bash)"
_provisioner() {{
    local cur prev words="" opts="" kind="" cmd="" action="" i w
    local -a global=()
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        case "$w" in
            --api|--config|--token-file) global+=("$w" "${{COMP_WORDS[i+1]}}"); ((i++)); continue ;;
            -*) continue ;;
        esac
        if [[ -z "$cmd" ]]; then cmd="$w"; elif [[ -z "$action" ]]; then action="$w"; fi
    done
    case "$prev" in
{option_cases}
        --api|--config|--token-file|--report|--checks|--from|--bmc-password-file) COMPREPLY=(); compopt -o default; return ;;
    esac
    if [[ -z "$kind" ]]; then
        if [[ -z "$cmd" ]]; then
            [[ "$cur" == -* ]] && words={shlex.quote(top_opts)} || words={shlex.quote(top)}
            COMPREPLY=($(compgen -W "$words" -- "$cur")); return
        fi
        case "$cmd $action" in
{chr(10).join(action_cases)}
            *)
            case "$cmd" in
{chr(10).join(cases)}
                *) ;;
            esac ;;
        esac
        if [[ "$cur" == -* ]]; then
            COMPREPLY=($(compgen -W "$opts" -- "$cur")); return
        fi
        if [[ -z "$kind" ]]; then
            [[ -z "$words" ]] && compopt -o default 2>/dev/null  # a file, where a command takes one
            COMPREPLY=($(compgen -W "$words" -- "$cur")); return
        fi
    fi
    local IFS=$'\\n'
    COMPREPLY=($("${{COMP_WORDS[0]}}" "${{global[@]}}" complete "$kind" "$cur" 2>/dev/null))
}}
complete -F _provisioner provisioner
"""


def cmd_completion(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    sys.stdout.write(script(parser))
    return 0


def names(client: Client, kind: str) -> list[str]:
    """Every name of a kind the daemon knows."""
    if kind in ("node", "target", "node-or-guest"):
        nodes = all_nodes(client)
        found = [n["name"] for n in nodes]
        if kind == "target":
            found += [r for r in client.get("/v1/racks")["racks"]] + ["all"]
            found += sorted({f"tag:{t}" for n in nodes for t in n.get("tags") or []})
        if kind == "node-or-guest":
            found += [g["name"] for g in client.get("/v1/guests")["guests"]]
        return found
    if kind == "rack":
        return list(client.get("/v1/racks")["racks"])
    if kind == "tag":
        return sorted({t for n in all_nodes(client) for t in n.get("tags") or []})
    if kind == "image":
        rows = client.get("/v1/images")["images"]
        return sorted({r["name"] for r in rows} | {r["ref"] for r in rows})
    if kind == "guest":
        return [g["name"] for g in client.get("/v1/guests")["guests"]]
    if kind == "host":
        return [h["name"] for h in client.get("/v1/hosts")["hosts"]]
    if kind == "role":
        return sorted({g["role"] for g in client.get("/v1/guests")["guests"]})
    if kind == "job":
        return [str(j["id"]) for j in client.get("/v1/jobs?limit=50")["jobs"]]
    if kind == "state":
        from ..states import State
        return [s.value for s in State]
    return []


def cmd_complete(client: Client, args: argparse.Namespace) -> int:
    """Names of a kind that start with a prefix, one a line; nothing at all on any error
    (a shell asks this as you type: it must never print a message into the command line)."""
    try:
        found = names(client, args.kind)
    except (ProvisionerError, OSError, KeyError, ValueError):
        return 0
    for name in sorted(set(found)):
        if name.startswith(args.prefix):
            print(name)
    return 0
