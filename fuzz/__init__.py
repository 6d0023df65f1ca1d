"""Coverage-guided fuzzing of grpyc's receiving path (atheris); see docs/security.md."""
