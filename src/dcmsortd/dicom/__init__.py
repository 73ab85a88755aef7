"""Reading a received file into the values we need: lean reader, element text, CSA, protocol."""
