from mft.cli import entrypoint

entrypoint()
