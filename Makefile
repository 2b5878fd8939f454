# Thin wrapper over scripts/setup.sh, CMake and CTest. The README's two commands:
#   make demo   set up, build, run the demo: distillation end to end on the CPU (configs/demo.yaml)
#   make test   set up, build, run the test suite (CPU; what CI runs)
# Other targets:
#   make tour       a walk through the commands one by one (scripts/tour.sh)
#   make build      configure and build (CPU-only, DISTILL_CUDA=OFF) in build/
#   make sanitize   build and test with ASan + UBSan in build-asan/
#   make fuzz       build the libFuzzer harnesses with clang and run each for FUZZ_SECONDS
#   make cuda       build with the CUDA backend (static non-CUDA deps) in build-cuda/,
#                   the tree that is copied to the GPU machine
#   make gpu-test   on a machine with a GPU: run the tests labelled gpu from build-cuda/
#   make device-pack  pack build-cuda's binary and gpu tests (GPU_TESTS="mla ...": some)
#                   into .device/ for tools/device_run.sh on the GPU machine
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 60
BUILD ?= build

.PHONY: setup configure build test demo tour sanitize fuzz cuda gpu-test device-pack clean

setup:
	./scripts/setup.sh

configure:
	cmake -S . -B $(BUILD) -DDISTILL_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: setup configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE gpu

demo: build
	$(BUILD)/distill demo

tour: build
	./scripts/tour.sh $(BUILD)/distill

sanitize: setup
	cmake -S . -B build-asan -DDISTILL_CUDA=OFF -DDISTILL_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) -LE gpu

fuzz: setup
	CC=clang cmake -S . -B build-fuzz -DDISTILL_CUDA=OFF -DDISTILL_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build-fuzz -j $(JOBS) --target fuzzers
	./scripts/fuzz.sh build-fuzz $(FUZZ_SECONDS)

cuda: setup
	cmake -S . -B build-cuda -DDISTILL_CUDA=ON -DDISTILL_STATIC_DEPS=ON -DCMAKE_BUILD_TYPE=Release
	cmake --build build-cuda -j $(JOBS)

gpu-test:
	cd build-cuda && ctest --output-on-failure -L gpu

# the CUDA build's binary and gpu tests for tools/device_run.sh on the GPU machine,
# xz-compressed into the git-ignored .device/ (the transfer is capped at 64 MiB: the
# tree is about 47 MB, so pick tests when they do not all fit, e.g. GPU_TESTS="mla teacher_cuda")
GPU_TESTS ?= $(patsubst build-cuda/tests/gpu_test_%,%,$(wildcard build-cuda/tests/gpu_test_*))
device-pack:
	rm -rf .device/tests && mkdir -p .device/tests
	xz -T0 -6 -c build-cuda/distill > .device/distill.xz
	for t in $(GPU_TESTS); do xz -T0 -6 -c build-cuda/tests/gpu_test_$$t > .device/tests/gpu_test_$$t.xz; done

clean:
	rm -rf build build-asan build-fuzz build-cuda
