//! Loader emulation: where ld.so, dyld or the Windows loader would find a
//! dependency.
