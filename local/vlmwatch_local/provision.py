"""Moved to :mod:`vlmwatch_local.cloud.provision` (``Stack`` is now ``StackResources``).

An alias until ``tests/conftest.py`` and ``tests/helpers.py`` (and the tests that still name this module)
import from the new home; then delete this file.
"""

from vlmwatch_local.cloud.provision import TEMPLATE, StackResources, load_template, provision

Stack = StackResources

__all__ = ["TEMPLATE", "Stack", "StackResources", "load_template", "provision"]
