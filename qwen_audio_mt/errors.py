"""The base of the errors a user can cause with a bad value (a model path, a generation setting,
a query): entry points print them as one line and exit 2. No imports, so any entry point can
catch them without loading torch."""


class UserError(ValueError):
    """A bad value from the user; the message names it and what is allowed, on one line."""
