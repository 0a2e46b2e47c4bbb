"""Step: write the bundle folder atomically. The torch-free writing lives in the engine
(``medexport.engine.bundle_write``) so that ``medexport calibrate`` and the viewer write
bundles the same way the build does."""
from medexport.engine.bundle_write import checksums, finish, staging_dir, write_json, write_manifest  # noqa: F401
