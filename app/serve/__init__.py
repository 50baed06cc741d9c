"""``volseg serve``: a lean server that speaks the MONAI Label protocol used by 3D Slicer."""

from app.serve.datastore import Datastore
from app.serve.errors import DatastoreError
from app.serve.server import ServerConfig, create_app, serve_address

__all__ = ["Datastore", "DatastoreError", "ServerConfig", "create_app", "serve_address"]
