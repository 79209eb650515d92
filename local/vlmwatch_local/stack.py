"""Moved to :mod:`vlmwatch_local.cloud.stack`.

An alias until the tests that still name this module (test_cli, test_e2e) import from the new home;
then delete this file.
"""

from vlmwatch_local.cloud.stack import LocalStack

__all__ = ["LocalStack"]
