"""The command-line programs, thin over the libraries: `python -m tf_autoseg.<name>` (and the
`tf-autoseg-<name>` console scripts) run `tf_autoseg.cli.<name>`. Nothing outside this
package imports it."""
