"""`python -m tf_autoseg.prepare`: runs the program `tf_autoseg.cli.prepare` (same flags)."""

if __name__ == "__main__":
    from tf_autoseg.cli import prepare

    prepare.run()
