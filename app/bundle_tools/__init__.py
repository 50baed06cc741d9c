"""Maintenance of the bundle folders in a VolSeg source checkout: the config copies generated from
one template (:mod:`app.bundle_tools.sync`) and the weights' hashes in ``large_files.yml``
(:mod:`app.bundle_tools.large_files`). Both run as ``python -m app.bundle_tools.<name>``; the
tests in ``tests/bundles/`` fail, saying which command to run, when a copy or hash is stale."""
