"""`python -m tf_autoseg.data_service`: runs the program `tf_autoseg.cli.data_service` (same flags)."""

if __name__ == "__main__":
    from tf_autoseg.cli import data_service

    data_service.run()
