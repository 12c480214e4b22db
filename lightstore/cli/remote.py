"""`lightstore push`, `pull`, `remote-ls`, `keygen` and `trust`: remote caches."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from lightstore.cli.context import EXIT_BAD_INPUT, CliError, Env, pass_env, root_option
from lightstore.cli.output import call_with_progress, emit_rows, human_size, output_options
from lightstore.exchange.extract import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS
from lightstore.foundation.errors import ArchiveError
from lightstore.foundation.refs import rref2dref
from lightstore.query import resolve_all


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as storage options; VALUE is JSON if it parses, else a string.

    A dotted KEY nests (``client_kwargs.endpoint_url=...``).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {key!r}...", param_hint="--option")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        target = out
        *parents, last = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise click.BadParameter(f"{key} mixes a value and a group", param_hint="--option")
        target[last] = value
    return out


def remote_options(fn: Any) -> Any:
    fn = click.option(
        "--option",
        "-o",
        "options",
        multiple=True,
        metavar="KEY=VALUE",
        help="An option for the remote's fsspec driver (repeatable; VALUE is JSON or a string; "
        "KEY.SUB nests), e.g. -o client_kwargs.endpoint_url=http://127.0.0.1:9000.",
    )(fn)
    return fn


def _jobs(fn: Any) -> Any:
    return click.option(
        "--jobs",
        "-j",
        type=click.IntRange(1, 256),
        default=8,
        show_default=True,
        help="Transfers at once.",
    )(fn)


@click.command("push")
@click.argument("url")
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@remote_options
@click.option(
    "--sign-key",
    metavar="FILE",
    help="Sign what is pushed with this secret key file (made by `lightstore keygen`). "
    "Default: $LIGHTSTORE_SIGNING_KEY.",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Hash the files the remote already holds (a download each, unless the remote is "
    "local, where this is always done), also of realizations already there, and upload "
    "damaged ones again; rewrite manifests and derivation records that do not verify.",
)
@_jobs
@root_option
@pass_env
def push_command(
    env: Env,
    url: str,
    refs: tuple[str, ...],
    options: tuple[str, ...],
    sign_key: str | None,
    repair: bool,
    jobs: int,
) -> None:
    """Upload REF... and everything they depend on to the remote cache at URL.

    URL is any fsspec URL: file:///srv/cache, s3://bucket/prefix (needs
    `pip install 'lightstore[s3]'`), memory://... A derivation stands for all
    its realizations. Files the remote already holds are not sent again; an
    interrupted push is finished by running it again (and its leftover
    temporary files on a file:// remote are removed). A realization holding
    a symlink that leaves it, or a name that is not UTF-8, is refused before
    anything is sent. With a signing key, a signature under its name that it
    did not make (an older key of the same name, junk) is replaced.

    \b
    Examples:
      lightstore push file:///srv/lightstore-cache train
      lightstore push s3://team-bucket/cache 3fa2c9d1 --sign-key ~/.config/lightstore/me.key
      lightstore push s3://bucket/cache train -o client_kwargs.endpoint_url=http://127.0.0.1:9000
      lightstore push s3://team-bucket/cache train --repair
    """
    from lightstore.remote import push

    store = env.store()
    targets = resolve_all(env.view(), refs)
    report = call_with_progress(
        push,
        "pushing",
        store,
        url,
        targets,
        storage_options=_parse_options(options),
        signing_key=sign_key,
        jobs=jobs,
        repair=repair,
    )
    uploaded = set(report.uploaded)
    for r in report.realizations:
        if r not in uploaded and (r in targets or rref2dref(r) in targets):
            click.echo(f"already on the remote: {r}")
    repaired = f", {report.blobs_repaired} damaged one(s) replaced" if report.blobs_repaired else ""
    click.echo(
        f"pushed {len(report.uploaded)} new realization(s) of {len(report.realizations)} "
        f"({report.blobs_uploaded} file(s), {human_size(report.bytes_uploaded)} uploaded"
        f"{repaired})"
    )
    if report.records_repaired:
        click.echo(f"rewrote {report.records_repaired} damaged manifest(s) or derivation record(s)")
    if report.signatures_replaced:
        click.echo(
            f"replaced the signatures of {report.signatures_replaced} realization(s) that "
            "another key with the same name (or junk) had made"
        )


@click.command("pull")
@click.argument("url")
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@remote_options
@click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    metavar="NAME:KEY",
    help="Accept only realizations signed by this public key (repeatable). Default: "
    "$LIGHTSTORE_TRUSTED_KEYS and the store's trusted-keys file (see `lightstore trust`).",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_BYTES,
    show_default=True,
    metavar="BYTES",
    help="Refuse, before downloading, a pull whose new files add up to more (each path counts, "
    "as in `unpack`).",
)
@click.option(
    "--max-members",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_MEMBERS,
    show_default=True,
    metavar="N",
    help="Refuse a pull whose new realizations hold more files, folders and links.",
)
@_jobs
@root_option
@pass_env
def pull_command(
    env: Env,
    url: str,
    refs: tuple[str, ...],
    options: tuple[str, ...],
    trusted_keys: tuple[str, ...],
    max_bytes: int,
    max_members: int,
    jobs: int,
) -> None:
    """Download REF... and everything they depend on from the remote cache at URL.

    REF is a full DRef (all its realizations on the remote) or RRef. Every
    hash is checked before anything is added. A realization that is damaged,
    lying or unsigned (when keys are trusted), or that does not fit
    --max-bytes, --max-members or the free space next to the ones before it,
    is left out and named (exit 2); the others are added. Prints the RRefs
    added, and says which requested ones were already present.

    \b
    Examples:
      lightstore pull file:///srv/lightstore-cache rref:5d0c41aa9e8b7a6f5d4c3b2a1f0e9d8c-3fa2c9d1e8b7a6f5d4c3b2a1f0e9d8c7-train
      lightstore pull s3://team-bucket/cache dref:3fa2c9d1e8b7a6f5d4c3b2a1f0e9d8c7-train
    """
    from lightstore.remote import pull

    try:
        added = call_with_progress(
            pull,
            "pulling",
            env.store(),
            url,
            list(refs),
            storage_options=_parse_options(options),
            trusted_keys=list(trusted_keys) or None,
            jobs=jobs,
            max_bytes=max_bytes,
            max_members=max_members,
        )
    except ArchiveError as e:
        for r in getattr(e, "added", ()):  # what verified was added; the error names the rest
            click.echo(r)
        raise
    for r in added:
        click.echo(r)
    new = set(added) | {rref2dref(r) for r in added}
    for ref in dict.fromkeys(refs):
        if ref not in new:
            # pull raises for what the remote lacks: anything not added was here already.
            click.echo(f"already present: {ref}")


@click.command("remote-ls")
@click.argument("url")
@click.option("--name", default=None, help="Only realizations of derivations with this name.")
@click.option("--derivation", "dref", default=None, metavar="DREF", help="Only this derivation.")
@click.option(
    "--context",
    default=None,
    metavar="HASH",
    help="Only realizations in this context (its hash, as `lightstore show` prints); needs --derivation.",
)
@remote_options
@output_options
@root_option
def remote_ls_command(
    url: str,
    name: str | None,
    dref: str | None,
    context: str | None,
    options: tuple[str, ...],
    fmt: str,
) -> None:
    """List the realizations the remote cache at URL holds.

    Reads the remote's index only (one listing per derivation); no store is
    needed.

    \b
    Examples:
      lightstore remote-ls file:///srv/lightstore-cache
      lightstore remote-ls s3://team-bucket/cache --name train --json
    """
    from lightstore.remote import list_remote

    found = list_remote(
        url, name=name, dref=dref, context=context, storage_options=_parse_options(options)
    )
    rows = [
        {
            "rref": x.rref,
            "dref": x.dref,
            "name": x.dref.rsplit("-", 1)[-1],
            "context": x.context_hash,
        }
        for x in found
    ]
    emit_rows(rows, ["name", "rref", "dref", "context"], fmt)


@click.command("keygen")
@click.argument("name")
@click.argument("out", metavar="FILE")
def keygen_command(name: str, out: str) -> None:
    """Make an ed25519 signing key NAME, write its secret to FILE, print its public key.

    Keep FILE private (it is created readable by you only, its folder too if
    new); give the printed public key to the people who pull (`lightstore trust`).

    \b
    Examples:
      lightstore keygen alice-laptop-1 ~/.config/lightstore/alice.key
    """
    from lightstore.remote import generate_signing_key

    key = generate_signing_key(name)
    path = os.path.expanduser(out)
    folder = os.path.dirname(path)
    try:
        if folder and not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700)  # a new folder for a secret: private too
    except OSError as e:
        raise CliError(f"cannot create the folder of {out}: {e.strerror}", EXIT_BAD_INPUT) from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{out} exists; choose another file", EXIT_BAD_INPUT) from None
    except OSError as e:
        raise CliError(f"cannot create {out}: {e.strerror}", EXIT_BAD_INPUT) from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.secret_text() + "\n")
    click.echo(key.public)


@click.command("trust")
@click.argument("key", metavar="NAME:KEY")
@root_option
@pass_env
def trust_command(env: Env, key: str) -> None:
    """Trust the public KEY: from now on `pull` and substitution into this store accept
    only realizations signed by a trusted key.

    \b
    Examples:
      lightstore trust alice-laptop-1:Xq3c0VZ5mUeP9k1v3s9jPZ4f0b2Jtq9V4yS0QmBf1yE=
    """
    from lightstore.remote import add_trusted_key

    name = add_trusted_key(env.store().root, key)
    click.echo(f"trusted {name}")


COMMANDS = [push_command, pull_command, remote_ls_command, keygen_command, trust_command]
