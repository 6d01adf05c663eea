//! Randomness for PSS salts, encryption padding and `C_GenerateRandom`:
//! the kernel's CSPRNG through getrandom(2).

pub fn fill(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::getrandom(buf)
}
