from gridgen.cli import entry

entry()
