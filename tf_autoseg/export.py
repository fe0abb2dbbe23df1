"""`python -m tf_autoseg.export`: runs the program `tf_autoseg.cli.export` (same flags)."""

if __name__ == "__main__":
    from tf_autoseg.cli import export

    export.run()
