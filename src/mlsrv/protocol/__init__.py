"""Wire protocol pieces shared by server and client. Imports numpy and protobuf only, never TensorFlow."""
