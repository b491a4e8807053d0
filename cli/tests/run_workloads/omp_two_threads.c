/* A library that asks for its own thread count, as some packages do
 * (a num_threads=2 argument): omp_set_num_threads(2) starts a libgomp pool
 * of two threads whatever OMP_NUM_THREADS says, so the environment cannot
 * make fork safe for it (HAZARDS, "An environment fix is not always a fix").
 *
 * double work2(int n): an OpenMP reduction whose result does not depend on
 * the thread count. Build: gcc -O2 -fopenmp -shared -fPIC -o libomp2.so */
#include <omp.h>

double work2(int n) {
    double s = 0;
    omp_set_num_threads(2);
#pragma omp parallel for reduction(+:s)
    for (long i = 0; i < (long)n * 20000; i++) s += (i % 5) * 0.5;
    return s;
}
