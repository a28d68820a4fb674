mod client;
mod fuzz_corpus;
mod webhook;
mod ws;
