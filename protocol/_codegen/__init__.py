"""Development tools that generate committed code; never imported at run time."""
