import sys

sys.setswitchinterval(0.0005)
from .cli import entry

entry()
