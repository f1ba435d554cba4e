"""Flags checked where they are parsed, so that a bad one is a usage error naming the flag.

A flag that overrides a setting (`--batch-size` is MONTAGE_BATCH_SIZE) is validated by the
setting's own rules (`config.check_flag`), on its own: its error names `--batch-size`, never
the variable the flag stands in for, and a bad variable in the environment is still reported
as the variable's problem when settings load.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from montage_vec.config.moments import parse_moment

FlagCallback = Callable[[click.Context, click.Parameter, Any], Any]
FC = TypeVar("FC", bound=Callable[..., Any])


def setting_flag(field: str, *, item: bool = False) -> FlagCallback:
    """A click callback: the flag's value as the setting `field` holds it, or a usage error (exit 2).

    `item`: the flag gives one element of a list setting (`show --user-id` of USER_ID_FILTER's
    kind); a repeatable flag (`multiple=True`) gives the whole list.
    """

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or (param.multiple and not value):
            return value
        from montage_vec.config import check_flag

        given = list(value) if param.multiple else [value] if item else value
        try:
            checked = check_flag(field, given)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
        if param.multiple:
            return tuple(checked)
        return checked[0] if item else checked

    return check


def as_of_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """`--as-of` as a UTC datetime; a usage error unless it is ISO 8601 (no offset means UTC)."""
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 timestamp: {value!r}", ctx=ctx, param=param) from None


def one_user_option(help_text: str) -> Callable[[FC], FC]:
    """`--user-id UUID`, required, checked and canonicalised like USER_ID_FILTER's ids (`show`, `explain`)."""
    return click.option(
        "--user-id", required=True, metavar="UUID", callback=setting_flag("user_id_filter", item=True), help=help_text
    )
