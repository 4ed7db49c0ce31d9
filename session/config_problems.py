"""Pydantic validation errors turned into problems that name the file, the key path and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from session.config_sources import KeyPath, dotted, file_problem, origin_of
from session.problems import Problem

__all__ = [
    "problem_from_error",
    "problems_from_validation",
]


# --------------------------------------------------------------------------- pydantic errors -> problems


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            args = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The model class that holds the value at ``loc``, or None when ``loc`` is not inside one."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is list:
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time" if type(value).__module__ == "datetime" else type(value).__name__


_EXPECTED = {
    "int_type": ("an integer", "write a whole number without quotes, e.g. 4"),
    "int_from_float": ("an integer", "write a whole number without a decimal point, e.g. 4"),
    "float_type": ("a number", "write a number without quotes, e.g. 2.5"),
    "bool_type": ("true or false", "write true or false, without quotes"),
    "string_type": ("a string", 'write the value in double quotes, e.g. "claude"'),
    "list_type": ("an array", 'write an array, e.g. ["a", "b"]'),
    "dict_type": ("a table", "write a table: [name] with key = value lines, or { key = value }"),
    "model_type": ("a table", "write a table: [name] with key = value lines, or { key = value }"),
    "model_attributes_type": ("a table", "write a table: [name] with key = value lines, or { key = value }"),
}


def problem_from_error(error: Mapping[str, Any], root: type[BaseModel], file: str, prefix: KeyPath = ()) -> Problem:
    """One pydantic error as a Problem.  Never includes the offending value, except a
    short word that failed a choice of words (a tier, a provider), which is no secret.
    """
    loc: KeyPath = tuple(error["loc"])
    if loc and loc[-1] == "[key]":  # a dict key failed (e.g. a provider name under [keys.env])
        loc = loc[:-1]
    kind = error["type"]
    ctx = error.get("ctx") or {}
    field = dotted((*prefix, *loc)) or None
    if kind == "extra_forbidden":
        key = str(loc[-1])
        holder = _model_at(root, loc[:-1])
        allowed = sorted(holder.model_fields) if holder is not None else []
        close = difflib.get_close_matches(key, allowed, n=1)
        start = f"did you mean '{close[0]}'?" if close else "remove it or correct its spelling;"
        listed = f" Allowed here: {', '.join(allowed)}" if allowed else ""
        return file_problem(file, f"unknown key '{key}'", f"{start}{listed}", field)
    if kind == "missing":
        return file_problem(file, "required key is missing", f"add {loc[-1]} = ...", field)
    if kind in _EXPECTED:
        expected, fix = _EXPECTED[kind]
        return file_problem(file, f"expected {expected}, found {_kind(error.get('input'))}", fix, field)
    if kind == "literal_error":
        value = error.get("input")
        shown = f"'{value}' " if isinstance(value, str) and len(value) <= 40 and value.isprintable() else ""
        return file_problem(
            file, f"{shown}is not one of the allowed values", f"use one of: {ctx.get('expected')}", field
        )
    if "fix" in ctx:
        return file_problem(file, str(error["msg"]), str(ctx["fix"]), field)
    bound = {
        "greater_than": "more than {gt}",
        "greater_than_equal": "at least {ge}",
        "less_than": "less than {lt}",
        "less_than_equal": "at most {le}",
        "too_short": "at least {min_length} long",
        "string_too_short": "at least {min_length} characters long",
    }.get(kind)
    if bound is not None:
        need = bound.format(**ctx)
        return file_problem(file, f"must be {need}", f"change it to a value {need}", field)
    return file_problem(
        file, str(error["msg"]), "correct this value (see `executor config check` for the defaults)", field
    )


def problems_from_validation(
    error: ValidationError, root: type[BaseModel], where: Mapping[KeyPath, str], prefix: KeyPath = ()
) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        problems.append(problem_from_error(item, root, origin_of(where, item["loc"]), prefix))
    return problems
