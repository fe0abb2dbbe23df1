"""`python -m tf_autoseg.train`: runs the program `tf_autoseg.cli.train` (same flags)."""

if __name__ == "__main__":
    from tf_autoseg.cli import train

    train.run()
