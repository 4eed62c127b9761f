import pytest

from testkit.app_server import running_app


@pytest.fixture(scope="module")
def app_url():
    """The real app with its default settings, started once for each test module that asks."""
    with running_app() as (url, _):
        yield url
