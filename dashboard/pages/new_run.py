import streamlit as st

st.title('new_run')
st.info('Not built yet.')
