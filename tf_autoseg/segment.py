"""`python -m tf_autoseg.segment`: runs the program `tf_autoseg.cli.segment` (same flags)."""

if __name__ == "__main__":
    from tf_autoseg.cli import segment

    segment.run()
