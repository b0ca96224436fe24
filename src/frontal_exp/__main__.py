"""`python -m frontal_exp`: see frontal_exp.app."""

from frontal_exp.app import main

main()
