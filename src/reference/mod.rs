//! CPU f64 reference implementations, forward and backward, of every GPU op. Plain loops,
//! obviously right, used by the tests as ground truth (and by the gradient checks in
//! `tests/`, which difference them numerically).

pub mod attention;
pub mod conv2d;
pub mod ddpm;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod groupnorm;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod optim;
pub mod random;
pub mod sde;
pub mod vlb;
