"""`lightstore push`, `pull`, `remote-ls`, `keygen` and `trust`: remote caches."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from lightstore.cli.context import EXIT_BAD_INPUT, CliError, Env, pass_env, root_option
from lightstore.cli.output import call_with_progress, emit_rows, human_size, output_options
from lightstore.cli.remote_runs import emit_runs
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


def _sort_options(what: str) -> Any:
    def decorate(fn: Any) -> Any:
        fn = click.option(
            "--limit",
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            help="Keep the first N runs (of each REF, after --sort).",
        )(fn)
        return click.option(
            "--sort",
            metavar="COLUMN",
            help=f"{what}: a metric (loss, loss:min for a series), a config field, started, "
            "stopped or duration; -COLUMN for descending; missing values last.",
        )(fn)

    return decorate


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

    REF is anything `lightstore show` takes: a reference, a hash prefix, a
    name, a selector (train@latest, 'train[lr=0.01]@all'), evaluated in the
    store. Build logs go with their realizations.

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
      lightstore push s3://team-bucket/cache 'train@all'
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
@_sort_options("Order the runs of each REF by COLUMN")
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
    sort: str | None,
    limit: int | None,
    jobs: int,
) -> None:
    """Download REF... and everything they depend on from the remote cache at URL.

    REF designates runs of the remote as REFs do in a store: a DRef (all its
    runs), an RRef, a hash prefix unique on the remote (3fa2, 3fa2-1b7e), a
    derivation name, a selector (train@latest, 'train[lr=0.01]@all'). Selectors
    are evaluated against the remote's manifests (configs, build times,
    metrics; with trusted keys only signed ones), never its files. --sort
    orders the runs of each REF as `history --sort` does and --limit N keeps
    the first N: `--sort loss --limit 1` pulls the run of lowest loss. Every
    hash is checked before anything is added. A realization that is damaged,
    lying or unsigned (when keys are trusted), or that does not fit
    --max-bytes, --max-members or the free space next to the ones before it,
    is left out and named (exit 2); the others are added. Prints the RRefs
    added, and says which requested ones were already present.

    \b
    Examples:
      lightstore pull file:///srv/lightstore-cache rref:5d0c41aa9e8b7a6f5d4c3b2a1f0e9d8c-3fa2c9d1e8b7a6f5d4c3b2a1f0e9d8c7-train
      lightstore pull s3://team-bucket/cache dref:3fa2c9d1e8b7a6f5d4c3b2a1f0e9d8c7-train
      lightstore pull s3://team-bucket/cache 5d0c41aa
      lightstore pull s3://team-bucket/cache 'train@all' --sort loss --limit 1
      lightstore pull s3://team-bucket/cache 'train[lr=0.01]@latest'
    """
    from lightstore.facade import find_on_remote
    from lightstore.remote import pull

    store = env.store()
    storage_options = _parse_options(options)
    keys = list(trusted_keys) or None
    targets = find_on_remote(
        url,
        refs,
        sort=sort,
        limit=limit,
        storage_options=storage_options,
        trusted_keys=keys,
        store_root=store.root,
        jobs=jobs,
    )
    try:
        added = call_with_progress(
            pull,
            "pulling",
            store,
            url,
            targets,
            storage_options=storage_options,
            trusted_keys=keys,
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
    for ref in targets:
        if ref not in new:
            # pull raises for what the remote lacks: anything not added was here already.
            click.echo(f"already present: {ref}")


@click.command("remote-ls")
@click.argument("url")
@click.option(
    "--name", default=None, help="Only realizations of derivations with this name (or glob)."
)
@click.option("--derivation", "dref", default=None, metavar="DREF", help="Only this derivation.")
@click.option(
    "--context",
    default=None,
    metavar="HASH",
    help="Only realizations in this context (its hash, as `lightstore show` prints); needs --derivation.",
)
@click.option(
    "--select",
    "-s",
    "selectors",
    multiple=True,
    metavar="REF",
    help="Only the runs REF designates, as `pull` takes it (repeatable): a selector "
    "('train[lr=0.01]@all', train@latest), a hash prefix, a name, a reference.",
)
@click.option(
    "--field",
    "-f",
    "fields",
    multiple=True,
    metavar="FIELD",
    help="Add a config field as a column (repeatable): -f lr -f model.depth.",
)
@click.option(
    "--varying", is_flag=True, help="Add every config field whose value varies among the runs."
)
@click.option(
    "--metric",
    "-m",
    "metrics",
    multiple=True,
    metavar="NAME",
    help="Add a metric as a column (repeatable): -m loss; a series gives its last value, or "
    "NAME:min, NAME:max, NAME:first, NAME:steps; -m '*' adds every metric.",
)
@_sort_options("Order the runs by COLUMN")
@click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    metavar="NAME:KEY",
    help="Read only manifests signed by this public key (repeatable). Default: as `pull` "
    "(with --root, that store's trusted keys).",
)
@_jobs
@remote_options
@output_options
@root_option
@click.pass_context
def remote_ls_command(
    ctx: click.Context,
    url: str,
    name: str | None,
    dref: str | None,
    context: str | None,
    selectors: tuple[str, ...],
    fields: tuple[str, ...],
    varying: bool,
    metrics: tuple[str, ...],
    sort: str | None,
    limit: int | None,
    trusted_keys: tuple[str, ...],
    jobs: int,
    options: tuple[str, ...],
    fmt: str,
) -> None:
    """List the realizations the remote cache at URL holds.

    Reads the remote's index only (one listing), unless runs are selected
    (--select), sorted, or shown with fields or metrics: then their
    manifests too (small JSON, several at once; with trusted keys only
    signed ones count), never their files. No store is needed. Columns of
    config fields and metrics are as in `lightstore history`.

    \b
    Examples:
      lightstore remote-ls file:///srv/lightstore-cache
      lightstore remote-ls s3://team-bucket/cache --name train --json
      lightstore remote-ls s3://team-bucket/cache --name train --varying -m loss --sort loss
      lightstore remote-ls s3://team-bucket/cache -s 'train[lr<0.1]@all' -f lr -m '*'
    """
    from lightstore.facade import find_on_remote
    from lightstore.remote import list_remote
    from lightstore.remote.runs import remote_runs

    storage_options = _parse_options(options)
    details = bool(selectors or fields or varying or metrics or sort or limit)
    if not details:
        found = list_remote(
            url, name=name, dref=dref, context=context, storage_options=storage_options
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
        return
    root = _root_if_any(ctx)
    keys = list(trusted_keys) or None
    runs = remote_runs(
        url,
        name=name,
        storage_options=storage_options,
        trusted_keys=keys,
        store_root=root,
        jobs=jobs,
    )
    if dref is not None or context is not None:
        if context is not None and dref is None:
            raise CliError("--context needs --derivation", EXIT_BAD_INPUT)
        runs = [
            r
            for r in runs
            if (dref is None or r.dref == dref) and (context is None or r.context_hash == context)
        ]
    if selectors:
        wanted = set(
            find_on_remote(
                url,
                selectors,
                storage_options=storage_options,
                trusted_keys=keys,
                store_root=root,
                jobs=jobs,
            )
        )
        runs = [r for r in runs if r.rref in wanted or r.dref in wanted]
    emit_runs(runs, fields, varying, metrics, sort, limit, fmt)


def _root_if_any(ctx: click.Context) -> str | None:
    """The store given with --root or $LIGHTSTORE_ROOT, if it exists (for its trusted keys)."""
    env = ctx.find_object(Env)
    root = env.root if env is not None else None
    return root if root and os.path.isdir(root) else None


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
