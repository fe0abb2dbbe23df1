"""`python -m tf_autoseg.evaluate`: runs the program `tf_autoseg.cli.evaluate` (same flags)."""

if __name__ == "__main__":
    from tf_autoseg.cli import evaluate

    evaluate.run()
