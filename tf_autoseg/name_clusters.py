"""`python -m tf_autoseg.name_clusters`: runs the program `tf_autoseg.cli.name_clusters`."""

if __name__ == "__main__":
    from tf_autoseg.cli import name_clusters

    name_clusters.run()
