mod client;
mod webhook;
mod ws;
