#!/bin/sh
# Runs a test executable as N local MPI ranks: mpirun.sh N EXE [ARGS...].
# Exit status 77 (Meson: SKIP) when this build has no MPI (N = none) or no
# mpirun is installed. Open MPI refuses to run as root without the two
# OMPI_ALLOW_* variables; --oversubscribe lets N exceed the cores; --timeout
# ends a hung job (a rank stuck in a collective) instead of the test runner.
ranks=$1
shift
if [ "$ranks" = none ]; then
  echo "SKIPPED: spruce was built without MPI (meson option mpi)"
  exit 77
fi
if ! command -v mpirun >/dev/null 2>&1; then
  echo "SKIPPED: no mpirun on PATH"
  exit 77
fi
# Open MPI's plug-ins (dlopen'ed, unloaded by MPI_Finalize) leave allocations
# LeakSanitizer reports from "<unknown module>", where no suppression can name
# them: in a sanitized build the ranks run without leak checking; the other
# AddressSanitizer checks stay on (the last detect_leaks given wins).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SPRUCE_EXPECT_RANKS="$ranks"
exec mpirun -np "$ranks" --oversubscribe --timeout 240 "$@"
