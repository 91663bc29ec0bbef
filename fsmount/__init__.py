"""fsmount: Internet services as files and folders."""
__version__ = "0.1.0"
