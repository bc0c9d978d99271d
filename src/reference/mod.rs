//! CPU f64 reference implementations, forward and backward, of every GPU op. Plain loops,
//! obviously right, used by the tests as ground truth.

pub mod elementwise;
