"""An exception both sides of the drop-in program know."""


class CalcError(Exception):
    """Raised by the service for inputs it refuses."""
