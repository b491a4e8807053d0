/*
 * A stand-in for Windows' bcryptprimitives.dll, for running our test
 * binaries under wine 8 (scripts/wine.sh). Rust's std (1.78 and later)
 * takes its random bytes from ProcessPrng in bcryptprimitives.dll, which
 * Windows 10 and later have and wine 8 lacks: without it, no Rust
 * Windows binary starts under wine 8.
 *
 * ProcessPrng fills the buffer with RtlGenRandom (SystemFunction036 in
 * advapi32), which wine has; like the real one it always returns TRUE
 * (the real ProcessPrng cannot fail), unless RtlGenRandom itself fails.
 *
 *   x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll \
 *       bcryptprimitives.c -ladvapi32
 */
#include <windows.h>

/* RtlGenRandom: exported by advapi32 under this name. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        /* RtlGenRandom takes a ULONG length: large buffers in pieces. */
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reason;
    (void)reserved;
    return TRUE;
}
