"""`python -m biogpt.train lm|ner|classify ...`"""

from .cli import main

main()
