"""Errors meant for people: the CLI prints them as one line, without a traceback."""


class PatchworldError(Exception):
    """A problem with the user's input (recipe, files, sizes) that the message fully explains."""


class ComponentError(PatchworldError):
    """An unknown component name, a duplicate registration, or a bad key for a component."""


class DataError(PatchworldError):
    """Unreadable videos, empty folders, sizes that do not fit the model."""


class ContractError(ComponentError):
    """A component broke its part's contract (a shape, dtype or keyword rule of `patchworld.interfaces`); the
    message names the component, the rule, what it did and the fix."""
