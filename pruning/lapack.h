// The few LAPACK routines pruning needs, declared by hand: Debian's OpenBLAS
// exports the Fortran symbols (dpotrf_, dpotri_, dpotrs_) but ships no
// lapacke.h. Fortran conventions: every argument by pointer, matrices
// column-major. A symmetric matrix stored row-major is the same bytes as its
// column-major transpose, i.e. itself, so callers only need to be careful
// about which triangle ('L' column-major = upper row-major) gets written.
#pragma once

extern "C" {
/// Cholesky A = L L^T (uplo 'L') of an n×n SPD matrix, in place; info > 0: not SPD.
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
/// Inverse of A from its Cholesky factor, in place (only the `uplo` triangle).
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info);
/// Solves A X = B for nrhs right-hand sides given the Cholesky factor of A.
void dpotrs_(const char* uplo, const int* n, const int* nrhs, const double* a, const int* lda,
             double* b, const int* ldb, int* info);
}
