# dsflow developer commands.  On a fresh machine: `make run` (install + the default
# experiment on embedded data) or `make test` (install + the default test suite).
PYTHON ?= python
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: install run test test-slow test-all wheel clean

install:  ## install dsflow (editable) with pinned dependencies and the test extras
	$(PIP_INSTALL) -e ".[test]"

run: install  ## flow digits_rotated -> digits (default config), outputs under outputs/
	dsflow

test:  ## install + default test suite (the CI command)
	bash .ci/run

test-slow: install  ## only the tests marked slow
	$(PYTHON) -m pytest -q -m slow

test-all: install  ## every test, slow ones included
	$(PYTHON) -m pytest -q -m "slow or not slow"

wheel:  ## build the wheel into dist/
	$(PYTHON) -m pip wheel --no-deps --no-build-isolation . -w dist

clean:
	rm -rf build dist *.egg-info
