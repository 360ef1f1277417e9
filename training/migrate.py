"""`python -m training migrate-store --to URL` and `migrate-adapters --to URL`: move a
single machine's data to the shared backends (or between any two), keeping ids,
history, runs, adapter versions and CURRENT."""

from __future__ import annotations

import json

from pydantic import SecretStr

from training.backends import open_registry, open_store
from training.registry import RegistryError
from training.settings import CoreSettings, SettingsError, load_settings


def target_settings(settings: CoreSettings, **changes) -> CoreSettings:
    """`settings` with another store or registry, validated like the environment's."""
    fields = {**settings.model_dump(), **changes}
    return load_settings(type(settings), require_labels=False, **fields)


def migrate_store(args, settings: CoreSettings) -> int:
    """Copy the configured store into the empty one at `--to`."""
    from training.store.copy import copy_store

    if args.to == settings.store_url.get_secret_value():
        raise SettingsError("--to names the store already configured; give another one")
    target = target_settings(settings, store_url=SecretStr(args.to))
    source, destination = open_store(settings), open_store(target)
    try:
        counts = copy_store(source, destination)
    except ValueError as exc:  # a target that is not empty, say
        raise SettingsError(f"--to: {exc}") from None
    finally:
        source.close()
        destination.close()
    print(json.dumps({"copied": counts}))
    return 0


def migrate_adapters(args, settings: CoreSettings) -> int:
    """Copy every adapter version and CURRENT into the empty registry at `--to`."""
    from training.registry.copy import copy_registry

    if args.to == settings.adapters_url:
        raise SettingsError("--to names the registry already configured; give another one")
    target = target_settings(settings, adapters_url=args.to)
    try:
        copied = copy_registry(open_registry(settings), open_registry(target))
    except RegistryError as exc:
        raise SettingsError(f"--to: {exc}") from None
    print(json.dumps({"copied": copied}))
    return 0


def add_commands(commands) -> None:
    """The two subcommands, on the CLI's subparsers."""
    store = commands.add_parser("migrate-store", help="copy the store into an empty one")
    store.add_argument("--to", required=True, help="e.g. postgresql://user:pw@host:5432/db")
    adapters = commands.add_parser("migrate-adapters", help="copy the adapters and CURRENT")
    adapters.add_argument("--to", required=True, help="e.g. s3://bucket/prefix")


COMMANDS = {"migrate-store": migrate_store, "migrate-adapters": migrate_adapters}
