import pytest


@pytest.fixture(scope="module")
def client(server):
    """A gradio_client of the module's `server` fixture ((url, ...) of a running app)."""
    from gradio_client import Client

    return Client(server[0], verbose=False)
